"""``python -m analysis``: execute every notebook and regenerate the figures (see ``analysis.runner``).

``python -m analysis sweep PROBE ...`` runs a sharded, resumable sweep instead (see ``analysis.sweep``).
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["sweep"]:
        from analysis.sweep import main as sweep_main

        raise SystemExit(sweep_main(sys.argv[2:]))
    from analysis.runner import main

    raise SystemExit(main())
