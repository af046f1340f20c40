"""Views: each takes a Result (numpy only) and updates its plot items in place."""
