"""mmcurate: curate vision-language training data with Apache Beam."""

__version__ = "0.1.0"
