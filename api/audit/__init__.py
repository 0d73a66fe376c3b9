"""The audit log: who did what to which object, from which client and address."""
