"""Notifications: emails rendered from templates, a persistent outbox, SMTP, webhooks."""
