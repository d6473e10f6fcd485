"""NeuroChip's Streamlit app: the router around the pages (``streamlit run app/main.py``)."""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts app/ on the path, not the repository root that holds this package.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="NeuroChip", page_icon="🎛️", layout="wide")

# Not "pages/": Streamlit would also auto-discover that folder and, for a fresh server opened on
# a page's URL, list the raw file names in the sidebar before this navigation takes over.
VIEWS = Path(__file__).parent / "views"
navigation = st.navigation(
    [
        st.Page(VIEWS / "arrange.py", title="Arrange", icon=":material/piano:", default=True),
        st.Page(VIEWS / "takes.py", title="Takes", icon=":material/library_music:"),
        st.Page(VIEWS / "model.py", title="Model & device", icon=":material/memory:"),
    ]
)
from app import lifecycle, song, ui  # noqa: E402  (after the path fix above)

lifecycle.stop_jobs_at_exit()  # SIGTERM / Ctrl+C: the jobs stop before the process exits
song.restore_session()  # a refresh or a restart finds what was open (app/state.py keeps it)
ui.engine()  # the model starts loading in the background at the first page view
navigation.run()
