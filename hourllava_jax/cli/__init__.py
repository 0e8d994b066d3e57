"""Entry points (``main()`` functions behind the console scripts and ``launch/*.py``)."""
