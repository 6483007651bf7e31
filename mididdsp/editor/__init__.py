"""The web editor: ``mididdsp edit song.mid`` serves a local page that shows a performance and lets a person edit
its note expression and hear it at once (docs/editor.md).

``session.py`` holds the state of one editing session (the model, the score, the current note expression, undo
and redo, a cache of each voice's rendered audio) over render's public API; ``server.py`` is the JSON API over a
session and the ``edit`` command; ``static/`` is the page, shipped as package data. Nothing else imports this.
"""
