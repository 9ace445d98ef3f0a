"""Federated fine-tuning with Flower (``greentune federate``, docs/federate.md).

partitions   which clients a dataset has; each client's own series, split and scaler
ridge        the skip path's ridge from the clients' summed sufficient statistics
client       a client's work without Flower: its data, network, one round of local steps
apps         Flower's ClientApp: each message's work metered on the client
protocol     what travels: message types, record names
server       the server's messaging, ledger rows, checkpoints; Flower's strategies
rounds       the rounds from the server's seat: ridge, offsets, init, train, test
results      a client's test scores and its own run; pooling across clients
central      the centralised reference (simulation only: it pools the data)
report       metrics.json of a federated run
simulate     every client on this machine: Flower's simulation engine (or ``inline``)
inline       an in-process engine (tests, machines where Ray cannot start)
deploy       SuperLink + SuperNodes: the server and each client as its own process
"""
