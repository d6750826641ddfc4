"""``python -m analysis``: execute every notebook and regenerate the figures (see ``analysis.runner``).

``python -m analysis sweep PROBE ...`` runs a sharded, resumable sweep instead (see ``analysis.sweep``);
``python -m analysis families`` lists the image-text-to-text model types and their support (``analysis.families``).
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["sweep"]:
        from analysis.sweep import main as sweep_main

        raise SystemExit(sweep_main(sys.argv[2:]))
    if sys.argv[1:2] == ["families"]:
        from analysis.families import main as families_main

        raise SystemExit(families_main(sys.argv[2:]))
    from analysis.runner import main

    raise SystemExit(main())
