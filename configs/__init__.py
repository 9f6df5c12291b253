"""Config files (each defines ``cfg``); a derived config imports its base from this package."""
