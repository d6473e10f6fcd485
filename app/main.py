"""NeuroChip's Streamlit app: the router around the pages (``streamlit run app/main.py``)."""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts app/ on the path, not the repository root that holds this package.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="NeuroChip", page_icon="🎛️", layout="wide")

PAGES = Path(__file__).parent / "pages"
navigation = st.navigation(
    [
        st.Page(PAGES / "arrange.py", title="Arrange", icon=":material/piano:", default=True),
        st.Page(PAGES / "takes.py", title="Takes", icon=":material/library_music:"),
        st.Page(PAGES / "model.py", title="Model & device", icon=":material/memory:"),
    ]
)
navigation.run()
