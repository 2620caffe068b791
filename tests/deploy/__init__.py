"""What is deployed: the Helm chart, its alerting rules and its dashboard."""
