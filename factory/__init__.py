"""persona-factory: census-faithful synthetic people, their personas, answers and preference data as HF datasets."""

__version__ = "0.1.0"
