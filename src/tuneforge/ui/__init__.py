"""The web UI: data, training, playground and comparison pages over the library, at ``/ui``.

Served by ``tuneforge ui`` (and by ``tuneforge serve`` on a loopback bind), from the same app
as the OpenAI-compatible API, behind its guards and API key: ``mount_ui(create_app(...), ...)``.
Like the CLI, the UI sits above every other package; none imports it. Layout: ``app`` (mounting, pages,
assets), ``access`` (the key, cookie and write checks), ``data_api`` (``data inspect`` as
data), ``training_form`` (the form from the config dataclasses), ``train_api`` and ``runs``
(plan, start/stop/resume as CLI processes, run folders, metrics), ``jobs`` (child processes),
``playground_api`` (models, adapters, stores), ``compare_api`` (reports, starting a compare),
``settings``; ``static/`` holds the pages' HTML, CSS and JavaScript modules.
"""

from tuneforge.ui.app import mount_ui
from tuneforge.ui.settings import UiSettings, ui_settings_for_server

__all__ = ["UiSettings", "mount_ui", "ui_settings_for_server"]
