"""The app's tabs, one module each (handlers, then the tab's layout and its own wiring), rendered
into one page by app.py; `common` holds what they share: the model registry, the training job."""
