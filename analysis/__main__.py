"""``python -m analysis``: execute every notebook and regenerate the figures (see ``analysis.runner``)."""

from analysis.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
