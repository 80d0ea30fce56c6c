"""The message lifecycle, the resend job and the ports (Bus, Store) the adapters implement."""
