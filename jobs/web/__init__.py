"""Where a batch is shown: the server-rendered pages, their URLs and the SVG chart geometry."""
