"""The simulator: scenarios with ground truth, publishing onto a broker, and scoring the engine.

* ``simulator.generate.simulate``: scenario file -> trace, ground truth, orders (``emguard simulate``);
* ``simulator.publish.publish_trace``: trace -> broker at scaled real time (``emguard publish``);
* ``simulator.importers.import_track``: GPX/CSV recordings -> trace;
* ``simulator.scoring.score_files`` and ``simulator.tables.format_table``: alerts vs truth (``emguard score``);
* ``simulator.suite.run_suite``: the standard scenarios through ``engine.runtime.replay`` and the scorer;
* ``simulator.cli_commands.COMMANDS``: the click commands ``engine.tools.cli`` attaches.

The scenario format is described in ``simulator/scenarios/README.md``.
"""
