"""End-to-end recipes: several commands chained into one resumable run with a results table."""

from safereason.recipes.config import SafeChainRecipeConfig, load_recipe_config, make_recipe_config
from safereason.recipes.safechain import RecipeResult, run_recipe

__all__ = ["RecipeResult", "SafeChainRecipeConfig", "load_recipe_config", "make_recipe_config", "run_recipe"]
