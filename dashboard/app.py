"""perfdeck dashboard entry point: routing only. Pages live in dashboard/app_pages/ (not pages/, which
Streamlit would also auto-discover).

Run with `perfdeck dashboard`, or `python -m streamlit run dashboard/app.py` with PERFDECK_DB set."""
import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts dashboard/ on sys.path, not the repo root; make `import dashboard` work
# even without the editable install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.actions.ui import operator_sidebar, viewer_gate  # noqa: E402 - needs the sys.path line above
from dashboard.demo_switch import demo_switch  # noqa: E402

# Its own icon file: a :material/...: page icon makes every viewer's browser fetch it from Google's CDN.
st.set_page_config(layout="wide", page_title="perfdeck", page_icon=str(Path(__file__).parent / "assets" / "icon.png"))

# With viewer login configured, nothing but the login form runs until someone logs in: no page, no
# navigation (page names), no sidebar.
if not viewer_gate():
    st.stop()

PAGES = Path(__file__).parent / "app_pages"

# One line per page: section -> pages, shown in this order in the sidebar.
NAVIGATION = {
    "Performance": [
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page(PAGES / "caches.py", title="Caches", icon=":material/cached:"),
        st.Page(PAGES / "database.py", title="Database", icon=":material/database:"),
        st.Page(PAGES / "host.py", title="Host", icon=":material/memory:"),
        st.Page(PAGES / "cost.py", title="Cost", icon=":material/payments:"),
        st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
    ],
    "Operate": [
        st.Page(PAGES / "alerts.py", title="Alerts", icon=":material/notifications:"),
        st.Page(PAGES / "ingest.py", title="Ingest", icon=":material/move_to_inbox:"),
        st.Page(PAGES / "actions.py", title="Actions", icon=":material/build:"),
    ],
}

operator_sidebar()      # role, and the operator login, on every page
demo_switch()           # inside `perfdeck demo` only: deploy a slow build, roll it back

st.navigation(NAVIGATION).run()
