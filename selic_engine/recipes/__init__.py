"""Recipes: selic inside other tools' pipelines, tested in the suite (see README, "Pipelines")."""
