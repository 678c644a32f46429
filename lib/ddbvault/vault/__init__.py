"""The vault: a Delta table of items plus ddbvault's metadata beside it."""
