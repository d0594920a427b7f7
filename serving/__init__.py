"""The Ray Serve application: HTTP search API, experiment routing, model hot swap, web page."""
