"""Background batches: the OpenAI Batch API's files and batches, run on rq.

A batch is an input file of request lines (``files.py``), a record in Redis
(``records.py``), an rq job on ``[batch] queue`` that a ``switchyard batch-worker`` runs
(``runner.py``): it feeds every line into its model's ``batch`` priority through the
async client and writes what comes back in OpenAI's output and error line formats
(``lines.py``). It lives in ``dispatcher`` because it is a client of the queue (it
enqueues through :class:`~switchyard.dispatcher.client.AsyncClient`), as the gateway is.
"""
