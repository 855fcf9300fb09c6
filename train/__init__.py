"""Train: offline data modules and seeded trainers that produce a Trained model."""
