"""A minimal stdout callback for the tests: prints every task result of the run as one JSON
document ({"tasks": [{"task": name, "result": {...}}]}). ansible-core has no JSON callback."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: results_json
type: stdout
short_description: task results as one JSON document (tests only)
description: [task results as one JSON document]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "results_json"

    def __init__(self):
        super().__init__()
        self.tasks = []

    def _add(self, result, **extra):
        r = dict(result._result)
        r.update(extra)
        self.tasks.append({"task": result._task.get_name(), "host": result._host.get_name(), "result": r})

    def v2_runner_on_ok(self, result):
        self._add(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._add(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._add(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps({"tasks": self.tasks}, default=str))
