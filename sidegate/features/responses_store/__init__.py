"""The Responses answers the gateway keeps: `previous_response_id` and `GET|DELETE /v1/responses/{id}`."""
