"""Usage evidence from Intercom's admin activity log (spec §11): last sign-ins, access events
and the dormant-seat report."""
