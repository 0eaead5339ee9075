"""A word-level recurrent language model: the network of PyTorch's ``word_language_model``
example that Distiller's language-model schedules (AGP, Baidu RNN pruning) were written for.

``encoder`` (an embedding) → ``rnn`` (an ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` of ``nlayers``) →
``decoder`` (a linear layer onto the vocabulary), with dropout between, so the parameters are
named ``encoder.weight``, ``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``, …, ``decoder.weight``, as
those schedules name them. With ``tie_weights`` the decoder shares the embedding (Press & Wolf
2017; then ``ninp`` must equal ``nhid``).

Input is a batch of token ids ``[batch, time]`` (``batch_first``); the output is the logits of
every position, flattened to ``[batch·time, ntoken]``, so the next-token targets
``[batch·time]`` go straight into a cross-entropy loss (and :class:`prunekit.train.Trainer`).

Example:
    >>> lm = build("word_lm", ntoken=1000, ninp=64, nhid=64)
    >>> lm(torch.zeros(4, 35, dtype=torch.long)).shape
    torch.Size([140, 1000])
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.zoo._registry import register_model

__all__ = ["RNNLanguageModel", "word_lm"]


class RNNLanguageModel(nn.Module):
    """Embedding → RNN → linear decoder language model.

    Args:
        ntoken: vocabulary size.
        ninp: embedding width.
        nhid: hidden width of every RNN layer.
        nlayers: RNN layers.
        rnn_type: ``LSTM``, ``GRU``, ``RNN_TANH`` or ``RNN_RELU``.
        dropout: dropout after the embedding, between RNN layers and before the decoder.
        tie_weights: the decoder reuses the embedding matrix.
    """

    def __init__(
        self,
        ntoken: int,
        ninp: int,
        nhid: int,
        nlayers: int = 2,
        rnn_type: Literal["LSTM", "GRU", "RNN_TANH", "RNN_RELU"] = "LSTM",
        dropout: float = 0.0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        if min(ntoken, ninp, nhid, nlayers) < 1:
            raise ConfigError("word_lm: ntoken, ninp, nhid and nlayers must be positive")
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        between = dropout if nlayers > 1 else 0.0
        if rnn_type in ("LSTM", "GRU"):
            self.rnn: nn.RNNBase = getattr(nn, rnn_type)(
                ninp, nhid, nlayers, dropout=between, batch_first=True
            )
        elif rnn_type in ("RNN_TANH", "RNN_RELU"):
            nonlinearity = rnn_type.split("_")[1].lower()
            self.rnn = nn.RNN(
                ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=between, batch_first=True
            )
        else:
            raise ConfigError(
                f"word_lm: rnn_type must be LSTM, GRU, RNN_TANH or RNN_RELU, got {rnn_type!r}"
            )
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ConfigError("word_lm: tie_weights needs ninp == nhid")
            self.decoder.weight = self.encoder.weight
        # The example's initialisation: uniform(-0.1, 0.1) embedding and decoder, zero bias.
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if not tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.rnn(self.drop(self.encoder(tokens)))
        return self.decoder(self.drop(out)).reshape(-1, self.decoder.out_features)


@register_model("word_lm")
def word_lm(
    *,
    ntoken: int = 10_000,
    ninp: int = 200,
    nhid: int = 200,
    nlayers: int = 2,
    rnn_type: Literal["LSTM", "GRU", "RNN_TANH", "RNN_RELU"] = "LSTM",
    dropout: float = 0.2,
    tie_weights: bool = False,
) -> nn.Module:
    """PyTorch's word language model (:class:`RNNLanguageModel`); the defaults are its small
    configuration (200-wide, 2-layer LSTM)."""
    return RNNLanguageModel(ntoken, ninp, nhid, nlayers, rnn_type, dropout, tie_weights)
