"""Everything that speaks Intercom: the REST client, its payload models and webhook signatures."""
