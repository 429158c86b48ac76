"""SFTP front end: asyncssh server, public-key auth against the key store, chrooted atomic uploads."""
