"""Operation types that call HTTP services: a pipeline call, and an external job submitted then polled."""
