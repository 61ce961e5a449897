"""Where answers come from: Ground Truth jobs, the self-hosted portal, simulated reviewers, template rendering."""
