"""Sidegate's xDS server: Envoy's listener, routes and clusters over ADS, rendered by
sidegate/bootstrap from the file's configuration and the store's routing document."""
