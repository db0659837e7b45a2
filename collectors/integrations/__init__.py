"""Integrations: one module per framework or library, each importing its library lazily so that
`collectors.integrations` itself costs nothing to import.

    from collectors.integrations.sqlalchemy import instrument_sqlalchemy
    instrument_sqlalchemy(engine)                 # every statement -> sdk.record_query
"""
