"""The outbox: messages to the outside world (member notifications, webhooks), written in the
same transaction as the change they announce and delivered later by a worker."""
