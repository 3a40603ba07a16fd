"""The parts of an import, one job each; :mod:`cohorts.importers` is their public face.

- :mod:`.reading`: files as rows of cells (encodings, CSV dialects, workbooks).
- :mod:`.mapping`: which column fills which attribute (guessed from headers and values, or given).
- :mod:`.cells`: a cell's text as a value of its attribute's type (phones, dates, numbers, emails...).
- :mod:`.records`: a row as a customer's attributes and events, or the reasons it cannot be.
- :mod:`.writing`: records matched with stored customers and written in batches.
- :mod:`.report`: what an import or a preview tells the caller.
"""
