"""Chat platforms: leaves that turn their messages into `Inbound` and send `Outbound` back."""
