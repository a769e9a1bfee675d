"""Who spoke when, online: speaker labels for the final turns of one local-server session.

`SpeakerLabeller` gets each final turn with its audio as the turn detector closes it, and returns
the turn labelled ``"A"``, ``"B"`` ... (on the turn and on every word), split in two or more where
the voice changes inside it. Labels come from online clustering of voice embeddings
(`nbscribe.server.voice`): a turn joins the speaker whose mean voice is closest when the cosine
similarity reaches `SpeakerSettings.threshold`, else it starts a new speaker, so no speaker count
is needed (``max_speakers`` caps it). Turns with too little speech to tell (under
`SpeakerSettings.min_speech`) never start a speaker: they take the closest one when it is close
enough, else ``"UNKNOWN"``, as AssemblyAI does.

A quick exchange (a hand-over with well under a second of silence) reaches the labeller as one
turn. Each gap between two words is a candidate change point; the voice left of it and right of
it are compared, and the turn is split at the most dissimilar gap when the two sides would get
different labels. Embeddings are computed once per turn on a grid of 1.6 s windows every 0.4 s,
so trying candidates costs little.

At the end of the session (`revise`), every turn is matched again against the speakers' final
voices, which are better known than when the turn was labelled; turns whose label changes are
returned for a ``SpeakerRevision`` message, which is how the protocol relabels earlier turns.
"""

from __future__ import annotations

import dataclasses
import logging
import string

import numpy as np

from ..events import SpeakerRevision, Turn, Word
from .pcm import RATE
from .voice import FRAME, PARTIAL, VoiceEncoder

__all__ = ["UNKNOWN", "SpeakerLabeller", "SpeakerSettings"]

logger = logging.getLogger(__name__)

UNKNOWN = "UNKNOWN"
_SENTENCE_END = (".", "?", "!")
_FRAMES_PER_MS = RATE / FRAME / 1000


@dataclasses.dataclass
class SpeakerSettings:
    """How voices are told apart.

    Attributes
    ----------
    threshold : float
        Cosine similarity to a speaker's mean voice from which a turn is that speaker; below it
        for every speaker, a turn with enough speech starts a new one.
    guess_threshold : float
        A turn too short to start a speaker takes the closest one from this similarity on, and
        is ``"UNKNOWN"`` below it.
    guess_margin : float
        At the end of the session, an ``"UNKNOWN"`` turn takes the closest speaker only when
        it is this much closer than the next one.
    change_threshold : float
        Two sides of a turn that match no known speaker are two new speakers when they are
        less similar than this.
    merge_threshold : float
        At the end of a session, speakers whose mean voices are at least this similar are
        one speaker (merged into the earlier label).
    min_speech : float
        Seconds of speech a turn (or a side of a split) needs to start a new speaker.
    min_side : float
        Seconds of speech a sentence needs to be matched to a voice on its own (a shorter one
        goes with a neighbour).
    min_gap : float
        Seconds of silence between two words from which a change of voice is looked for there
        even when the first word does not end a sentence.
    max_speakers : int, optional
        At most this many labels (AssemblyAI's ``max_speakers``); past it a turn takes the
        closest speaker.
    """

    threshold: float = 0.72
    guess_threshold: float = 0.55
    guess_margin: float = 0.05
    change_threshold: float = 0.6
    merge_threshold: float = 0.8
    min_speech: float = 1.0
    min_side: float = 0.8
    min_gap: float = 0.25
    max_speakers: int | None = None


@dataclasses.dataclass
class _Speaker:
    label: str
    total: np.ndarray  # sum of turn embeddings, each weighted by its seconds of speech
    seconds: float

    @property
    def voice(self) -> np.ndarray:
        return self.total / max(float(np.linalg.norm(self.total)), 1e-9)


@dataclasses.dataclass
class _Piece:
    turn_order: int
    embedding: np.ndarray
    seconds: float
    label: str
    turn: Turn
    avoid: frozenset[str] = frozenset()  # labels of the pieces it was split from


class SpeakerLabeller:
    """Labels the final turns of one session by voice, online.

    Parameters
    ----------
    encoder : VoiceEncoder, optional
        Shared by a server's sessions (it keeps no state); default a new one.
    settings : SpeakerSettings, optional
    """

    def __init__(self, encoder: VoiceEncoder | None = None,
                 settings: SpeakerSettings | None = None) -> None:
        self.encoder = encoder or VoiceEncoder()
        self.settings = settings or SpeakerSettings()
        self.speakers: list[_Speaker] = []
        self.pieces: list[_Piece] = []
        self._merged: dict[str, str] = {}  # label merged away -> the label it joined

    # -- labelling ----------------------------------------------------------------------------

    def label(self, turn: Turn, audio: np.ndarray, start_ms: float) -> list[Turn]:
        """Label a final turn, splitting it where the voice changes.

        Parameters
        ----------
        turn : Turn
            The final turn; its words carry times in ms on the session's timeline.
        audio : numpy.ndarray
            The turn's audio, float32 at 16 kHz.
        start_ms : float
            Where `audio` starts on the session's timeline.

        Returns
        -------
        list of Turn
            One or more final turns with ``speaker_label`` set and ``speaker`` on each word,
            numbered from ``turn.turn_order`` on.
        """
        frames = self.encoder.mel(audio)
        grid = _Grid(self.encoder, frames)
        words = list(turn.words)
        # Word bounds in frames from the start of the audio.
        spans = [(max(0, round((w.start - start_ms) * _FRAMES_PER_MS)),
                  min(len(frames), round((w.end - start_ms) * _FRAMES_PER_MS))) for w in words]
        parts = self._split(grid, words, spans)
        out = []
        new_labels: dict[object, str] = {}
        for i, (a, b, voice) in enumerate(parts):
            piece_words = words[a:b]
            lo, hi = (spans[a][0], spans[b - 1][1]) if len(parts) > 1 else (0, len(frames))
            embedding = grid.embed(lo, hi)
            seconds = _speech_seconds(piece_words)
            if isinstance(voice, str):
                label = self._add(voice, embedding, seconds)
            elif voice is not None and seconds < self.settings.min_speech:
                label = UNKNOWN  # a new voice, but too short to start a speaker on
            elif voice is not None and self._room():
                if voice not in new_labels:
                    new_labels[voice] = self._new(embedding, seconds)
                else:
                    self._add(new_labels[voice], embedding, seconds)
                label = new_labels[voice]
            else:
                label = self._assign(embedding, seconds)
            text = turn.transcript if len(parts) == 1 else " ".join(w.text for w in piece_words)
            labelled = dataclasses.replace(
                turn, turn_order=turn.turn_order + i, transcript=text, utterance=text,
                speaker_label=label,
                words=tuple(dataclasses.replace(w, speaker=label) for w in piece_words),
            )
            self.pieces.append(_Piece(labelled.turn_order, embedding, seconds, label, labelled))
            out.append(labelled)
        if len(out) > 1:  # the end-of-session match keeps a cut piece apart from its neighbours
            for i, piece in enumerate(self.pieces[-len(out):]):
                piece.avoid = frozenset(t.speaker_label for t in out[max(0, i - 1):i + 2]
                                        if t.speaker_label not in (piece.label, UNKNOWN))
            logger.debug("turn %d split at changes of voice into %s", turn.turn_order,
                         [t.speaker_label for t in out])
        return out

    def _split(self, grid: _Grid, words: list[Word], spans: list[tuple[int, int]]
               ) -> list[tuple[int, int, object]]:
        """Cut a turn's words where the voice changes.

        Returns the (start, end) word ranges, each with the voice found for it when the turn
        was cut (a known label, or a key for a new voice), or ``None`` when it was not.

        The turn is cut into sentences first (at a word ending in ``.``, ``?`` or ``!``, or a
        gap of at least `SpeakerSettings.min_gap`): people hand over at the end of a sentence
        or after a pause. Each sentence with enough speech is matched to the known speakers;
        those that match none are grouped among themselves (a group is a voice when its
        sentences are at least `SpeakerSettings.change_threshold` alike); a short sentence
        goes with its more similar neighbour. Neighbouring sentences of one speaker are joined,
        and a cut is kept only where the voices on its two sides are not alike.
        """
        s = self.settings
        starts = [0] + [k for k in range(1, len(words))
                        if words[k - 1].text.endswith(_SENTENCE_END)
                        or words[k].start - words[k - 1].end >= s.min_gap * 1000]
        if len(starts) == 1:
            return [(0, len(words), None)]
        sentences = list(zip(starts, [*starts[1:], len(words)], strict=True))
        voices = grid.spans([(spans[a][0], spans[b - 1][1]) for a, b in sentences])
        seconds = [_speech_seconds(words[a:b]) for a, b in sentences]
        labels: list[object] = []
        groups: list[np.ndarray] = []  # voices that match no known speaker
        for voice, secs in zip(voices, seconds, strict=True):
            if secs < s.min_side:
                labels.append(None)
                continue
            label = self._assign(voice, secs, commit=False)
            if label is None:
                sims = [float(_unit(g) @ voice) for g in groups]
                if sims and max(sims) >= s.change_threshold:
                    i = int(np.argmax(sims))
                    groups[i] = groups[i] + voice * secs
                else:
                    i = len(groups)
                    groups.append(voice * secs)
                label = ("new", i)
            labels.append(label)
        if all(label is None for label in labels):
            return [(0, len(words), None)]
        for i in range(len(labels)):  # a short sentence joins its more similar neighbour
            if labels[i] is None:
                near = [j for j in (i - 1, i + 1) if 0 <= j < len(labels) and labels[j] is not None]
                if not near:
                    near = [j for j in range(len(labels)) if labels[j] is not None][:1]
                labels[i] = labels[max(near, key=lambda j: float(voices[j] @ voices[i]))]
        pieces: list[list[int]] = []  # runs of sentences with one label
        for i, label in enumerate(labels):
            if pieces and labels[pieces[-1][0]] == label:
                pieces[-1].append(i)
            else:
                pieces.append([i])
        # Keep a cut only where the two sides do not sound alike.
        merged = [pieces[0]]
        for piece in pieces[1:]:
            left = _unit(sum(voices[i] * seconds[i] for i in merged[-1]))
            right = _unit(sum(voices[i] * seconds[i] for i in piece))
            if float(left @ right) >= s.threshold:
                merged[-1] += piece
            else:
                merged.append(piece)
        if len(merged) == 1:
            return [(0, len(words), None)]
        return [(sentences[p[0]][0], sentences[p[-1]][1],
                 max((labels[i] for i in p), key=lambda lab: sum(
                     seconds[i] for i in p if labels[i] == lab)))
                for p in merged]

    def _assign(self, embedding: np.ndarray, seconds: float, commit: bool = True) -> str | None:
        """Return the label for a voice; with `commit`, update or add the speaker.

        Without `commit`, a voice that would start a new speaker gives ``None``.
        """
        s = self.settings
        best, similarity = self._closest(embedding)
        long_enough = seconds >= s.min_speech
        if best is not None and (similarity >= s.threshold or (long_enough and not self._room())):
            if commit:
                self._add(best.label, embedding, seconds)
            return best.label
        if long_enough:
            return self._new(embedding, seconds) if commit else None
        # a short turn takes a speaker clearly closer than the next one (with one speaker
        # known, nothing to compare with: it waits for the end of the session, unless
        # max_speakers says there is only that one)
        if best is not None and ((not self._room() and len(self.speakers) == 1) or (
                similarity >= s.guess_threshold and len(self.speakers) > 1
                and similarity - self._second(embedding) >= s.guess_margin)):
            return best.label
        return UNKNOWN

    def _second(self, embedding: np.ndarray) -> float:
        return sorted(float(sp.voice @ embedding) for sp in self.speakers)[-2]

    def _room(self) -> bool:
        return self.settings.max_speakers is None or len(self.speakers) < self.settings.max_speakers

    def _new(self, embedding: np.ndarray, seconds: float) -> str:
        label = _label(len(self.speakers) + len(self._merged))
        self.speakers.append(_Speaker(label, embedding * seconds, seconds))
        return label

    def _add(self, label: str, embedding: np.ndarray, seconds: float) -> str:
        """Add a turn's voice to a speaker's (when it has enough speech to be trusted)."""
        if seconds >= self.settings.min_speech:
            for sp in self.speakers:
                if sp.label == label:
                    sp.total = sp.total + embedding * seconds
                    sp.seconds += seconds
        return label

    def _closest(self, embedding: np.ndarray) -> tuple[_Speaker | None, float]:
        if not self.speakers:
            return None, -1.0
        sims = [float(sp.voice @ embedding) for sp in self.speakers]
        i = int(np.argmax(sims))
        return self.speakers[i], sims[i]

    # -- revision -----------------------------------------------------------------------------

    def revise(self) -> SpeakerRevision | None:
        """Match every turn again against the speakers' final voices.

        Speakers whose voices turned out alike are merged into the earlier label first. Returns
        the turns whose label changed, as a ``SpeakerRevision`` (``None`` when none did).
        """
        s = self.settings
        self._merge_alike()
        # A speaker heard for less than `min_speech` (a short piece cut from a turn) is not
        # trusted on its own: its pieces go to the closest established speaker.
        established = [sp for sp in self.speakers if sp.seconds >= s.min_speech]
        if not established:
            return None
        voices = np.stack([sp.voice for sp in established])
        revisions = []
        for piece in self.pieces:
            label = self._merged.get(piece.label, piece.label)
            sims = voices @ piece.embedding
            order = [int(i) for i in np.argsort(-sims)
                     if established[int(i)].label not in piece.avoid]
            if order:
                best = established[order[0]].label
                similarity = float(sims[order[0]])
                if len(order) > 1:
                    margin = similarity - float(sims[order[1]])
                else:  # the only candidate: because a cut ruled the others out, or the only voice
                    only = piece.avoid or s.max_speakers == 1
                    margin = 1.0 if only else similarity - s.threshold
                if (piece.seconds >= s.min_speech or similarity >= s.threshold
                        or (label != UNKNOWN and label not in [sp.label for sp in established])
                        or (label == UNKNOWN and similarity >= s.guess_threshold
                            and margin >= s.guess_margin)):
                    label = best
            if label != piece.label:
                piece.label = label
                words = tuple(dataclasses.replace(w, speaker=label) for w in piece.turn.words)
                piece.turn = dataclasses.replace(piece.turn, speaker_label=label, words=words)
                revisions.append((piece.turn_order, label, words))
        if not revisions:
            return None
        logger.debug("speaker revision: %s", [(o, lab) for o, lab, _ in revisions])
        return SpeakerRevision(revisions=tuple(revisions))

    def _merge_alike(self) -> None:
        merged = True
        while merged and len(self.speakers) > 1:
            merged = False
            for i, a in enumerate(self.speakers):
                for b in self.speakers[i + 1:]:
                    if float(a.voice @ b.voice) >= self.settings.merge_threshold:
                        a.total = a.total + b.total
                        a.seconds += b.seconds
                        self.speakers.remove(b)
                        self._merged[b.label] = a.label
                        for old, new in self._merged.items():
                            if new == b.label:
                                self._merged[old] = a.label
                        merged = True
                        break
                if merged:
                    break


class _Grid:
    """The voice of any stretch of one turn, from windows embedded once per turn.

    The turn's frames are covered by 1.6 s windows every 0.8 s, embedded together when the
    turn arrives; the sentences of a turn add one window each, aligned on their start,
    embedded together in one more batch.
    """

    def __init__(self, encoder: VoiceEncoder, frames: np.ndarray) -> None:
        self.encoder = encoder
        self.frames = frames
        self.starts = encoder.window_starts(len(frames))
        self.embeddings = encoder.embed_windows(encoder.windows(frames, self.starts))

    def embed(self, lo: int, hi: int, extra: np.ndarray | None = None) -> np.ndarray:
        """Return the voice of frames ``lo:hi``: the mean of the windows inside it (unit norm).

        `extra`, when given, is one more window embedding to include.
        """
        parts = [self.embeddings[i] for i, st in enumerate(self.starts)
                 if st >= lo and st + PARTIAL <= hi]
        if extra is not None:
            parts.append(extra)
        if not parts:
            parts = list(self.embeddings)
        return _unit(np.mean(parts, axis=0))

    def spans(self, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        """Return the voice of each range of frames (unit vectors).

        Each range gets the grid windows inside it and one window aligned on its start (so a
        range shorter than a window still has one), embedded together in one batch.
        """
        aligned = self.encoder.embed_windows(np.stack(
            [self.encoder.windows(self.frames[lo:max(hi, lo + 1)], [0])[0]
             for lo, hi in ranges]))
        return [self.embed(lo, hi, aligned[i]) for i, (lo, hi) in enumerate(ranges)]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _speech_seconds(words: list[Word]) -> float:
    return sum(max(0, w.end - w.start) for w in words) / 1000


def _label(i: int) -> str:
    letters = string.ascii_uppercase
    return letters[i] if i < len(letters) else letters[i // 26 - 1] + letters[i % 26]
