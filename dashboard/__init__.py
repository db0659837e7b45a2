"""perfdeck dashboard: everything that reads, renders and acts (Streamlit multipage app)."""
