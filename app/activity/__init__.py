"""Usage evidence from Intercom's admin activity log: last sign-ins, access events
and the dormant-seat report."""
