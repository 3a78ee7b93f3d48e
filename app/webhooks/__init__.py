"""Intercom webhooks, one module per stage, in the order a delivery goes through them:

1. `receive`: verify the signature over the raw body, store the delivery, decide the answer
   (never calls Intercom, never applies inline).
2. `inbox_writer`: one writer thread stores the deliveries of concurrent requests in the
   durable inbox with group commit; nothing is answered before its commit.
3. `inbox_drainer`: a background task claims due inbox rows in batches, in notification
   order, applies them in one transaction per batch and settles each row's `InboxStatus`.
4. `apply_notification`: applies ONE notification to the store (watermarks, tombstones) and
   says what it came to (`ApplyOutcome`).
5. `activity_evidence`: `admin.activity_log_event.created` notifications as usage evidence
   (sign-ins, access events), stored in the drainer's batch transaction.
"""
