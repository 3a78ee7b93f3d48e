"""Provisioning: C1 removes teammates and changes team members through this service,
which calls Intercom and, once Intercom confirms, records the change in the store at once."""
