"""greentune: fine-tune pretrained transformers for the grid, with the energy bill of each phase."""

from greentune.config import RunConfig, load_config
from greentune.errors import ConfigError, DataError, GreentuneError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "GreentuneError", "RunConfig", "__version__", "load_config"]
