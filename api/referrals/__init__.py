"""Referral / fission (裂变): members invite others; the invitee's registration and first order
reward the inviter, within limits that stop abuse."""
