"""Words that are not the user's phrase: common English words, and confusables that share its sounds.

A custom keyword's head learns "the phrase" against "everything else", so everything else must hold
the words people say all day (numbers, commands, names, household words) and, harder, words that
sound almost like the phrase. Confusables are found by sound, not spelling: espeak-ng transcribes
the phrase, the vocabulary and spelling variants of the phrase (another onset, another ending, a
suffix) into phonemes, and the closest by edit distance that do not sound the same are kept.
"""

from __future__ import annotations

import shutil
import subprocess

_WORDS = """
the be to of and a in that have it for not on with he as you do at this but his by from they we say her
she or an will my one all would there their what so up out if about who get which go me when make can
like time no just him know take people into year your good some could them see other than then now look
only come its over think also back after use two how our work first well way even new want because any
these give day most us yes okay hello hi hey thanks thank please sorry sure maybe right left stop start
go wait pause play next previous again open close lock unlock on off up down in out zero one two three
four five six eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen
twenty thirty forty fifty sixty seventy eighty ninety hundred thousand first second third last half
double single minute hour today tomorrow yesterday tonight morning evening night week month weekend
monday tuesday wednesday thursday friday saturday sunday january june july august october november
december spring summer autumn winter weather rain snow sun wind cold hot warm cool light lights lamp
kitchen bedroom bathroom living room garden garage door window table chair sofa bed floor wall house
home car bus train bike phone computer music radio speaker volume louder quieter faster slower higher
lower bigger smaller more less much many little big small long short high low fast slow early late happy
sad tired hungry ready busy free fine great nice bad good better best worse cat dog bird fish horse cow
tree flower grass water coffee tea milk bread apple orange banana lemon pizza pasta dinner lunch
breakfast cake sugar salt pepper cheese egg red green blue yellow black white brown pink purple grey
gold silver colour mother father mum dad brother sister son daughter baby child children friend family
people man woman boy girl john mary david sarah michael emma james anna robert linda peter susan paul
karen mark lisa tom kate steve helen chris julia daniel laura alex maria kevin nancy brian carol gary
donna jack jill ben amy sam ellen frank grace henry irene oscar rita victor wendy walk run jump sit
stand sleep eat drink read write sing dance listen watch call send buy sell pay turn move bring carry
find lose keep leave stay arrive begin finish help ask answer tell talk speak learn teach remember
forget love hate need try feel seem show hear hold bring follow lead forward backward behind ahead
inside outside above below between under over around near far away here there where why how which whose
whom what who when whatever whenever wherever always never sometimes often already still yet soon later
before after during until since while because although though unless really very quite too enough almost
nearly only just even also else instead anyway however something nothing anything everything someone
nobody anybody everybody somewhere nowhere everywhere money price bill card bank shop market store
office school hospital station airport hotel street road city town country world number letter word name
question problem idea story news picture film movie game sport football team player match ball party
birthday holiday christmas present wow oh ah hmm well so anyway alright cheers bye goodbye goodnight
welcome excuse pardon
"""
COMMON_WORDS = tuple(_WORDS.split())


def _phonemes(texts: list[str]) -> list[str]:
    """espeak-ng's phoneme mnemonics per text, stress marks dropped ('s'Ev@n' -> 'sEv@n')."""
    out = subprocess.run(
        ["espeak-ng", "-q", "-x", "-v", "en-us"],
        input="\n".join(texts).encode(),
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout.decode(errors="replace")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if len(lines) != len(texts):  # espeak joined or split a line: one text at a time
        return ["".join(lines)] if len(texts) == 1 else [_phonemes([t])[0] for t in texts]
    return [line.replace("'", "").replace(",", "").replace(" ", "") for line in lines]


def _distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "sh", "ch", "th")
SUFFIXES = ("ty", "teen", "er", "ing", "th")


def _spelling_variants(word: str) -> set[str]:
    """Pseudo-words that differ in their first sound, or run on into a suffix. (Another final
    consonant, or a plural, is what a real speaker's phrase often sounds like: not a negative.)"""
    first = next((i for i, c in enumerate(word) if c in "aeiouy"), len(word))
    out = {onset + word[first:] for onset in ONSETS} | {word + suffix for suffix in SUFFIXES}
    return {w for w in out if w != word}


def confusables(phrase: str, count: int = 40) -> list[str]:
    """Half common words, half pseudo-words, those that sound closest to the phrase without sounding
    the same; for a phrase of several words also each word alone and the phrase less its first or last
    word."""
    words = phrase.split()
    variants = {
        " ".join([*words[:i], v, *words[i + 1 :]]) for i, w in enumerate(words) for v in _spelling_variants(w)
    }
    real = sorted({w for w in COMMON_WORDS if w not in words})
    chosen: list[str] = []
    if shutil.which("espeak-ng") is None:  # no transcriber: spelling neighbours only
        chosen = sorted(variants)[:count]
    else:
        pseudo = sorted(variants)
        target, *sounds = _phonemes([phrase, *pseudo, *real])
        heard = dict(zip([*pseudo, *real], sounds, strict=True))
        for group in (pseudo, real):
            ranked = sorted((_distance(target, heard[t]), t) for t in group if heard[t] != target)
            chosen += [t for _, t in ranked[: count // 2]]
    if len(words) > 1:
        chosen += [*words, " ".join(words[1:]), " ".join(words[:-1])]
    return list(dict.fromkeys(chosen))


def negative_words(phrase: str) -> list[str]:
    """The common words, less the phrase's own words (a word of a longer phrase alone is a
    confusable, said by more voices)."""
    own = set(phrase.split())
    return [w for w in dict.fromkeys(COMMON_WORDS) if w not in own]
