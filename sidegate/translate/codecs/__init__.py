"""One codec per API around a canonical form (docs/translation.md, "Design"): a cross-API
translator is one API's request decoder and response encoder glued to another's request encoder
and response decoder (:mod:`.translator`)."""
