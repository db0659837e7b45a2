"""Plotly figure builders: frames from `dashboard.queries` in, figures out. No Streamlit, no SQL.

Every time chart has a UTC time axis spanning the selected range (or the data, when it covers clearly less
of it: `timeaxis`), the deploys and maintenance actions in it marked. One module per kind, re-exported here:
`base` (colours, layout, names as Plotly text), `timeaxis` (the fitted axis and the marks), `lines` (time
charts), `compare` (windows and the forest plot).

Names from the data (services, endpoints, versions, caches, models, ...) go through `plot_text` wherever
Plotly shows text: it reads HTML tags (<a href>, <b>) and entities in titles, legends, hover, annotations
and tick labels alike."""
from dashboard.charts.base import *  # noqa: F403
from dashboard.charts.base import _HIDDEN  # noqa: F401 - widgets escapes markdown with the same set
from dashboard.charts.compare import *  # noqa: F403
from dashboard.charts.lines import *  # noqa: F403
from dashboard.charts.statements import *  # noqa: F403
from dashboard.charts.timeaxis import *  # noqa: F403
