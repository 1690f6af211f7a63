"""The web console under /ui (PRODUCT §6.3): server-rendered pages over the admin use cases.

`session` signs the session cookie and checks CSRF tokens; `charts` draws the experiment chart as
SVG; `views` shapes what each page shows. The Litestar handlers are `gateway/api/console.py`
(the framework stays in `api/`); they only call the use cases the admin API and the command line
call. `templates/` and `static/` ship in the
package: the console needs no network and runs no script.
"""
