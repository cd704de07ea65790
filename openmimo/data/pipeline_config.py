"""Configuration of `openmimo data`: sources -> dedup -> decontamination -> tags -> mixture bins -> token shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from openmimo.data.minhash import MinHashParams

READERS = ("jsonl", "parquet", "pages", "warc")
EXECUTORS = ("local", "slurm", "ray")
URL_PRIORITIES = ("longest", "newest")


@dataclass
class MinHashConfig:
    ngram: int = 5  # words per shingle (digits kept)
    bands: int = 14  # LSH bands
    rows: int = 8  # signature values per band (stricter = more rows: problem variants with other numbers survive)

    def params(self, seed: int) -> MinHashParams:
        return MinHashParams(self.ngram, self.bands, self.rows, seed)


@dataclass
class SourceConfig:
    name: str = "web"  # source name (data card, mixture bins)
    reader: str = "jsonl"  # jsonl | parquet | pages (JSONL records with raw 'html', extracted) | warc (extracted)
    paths: list[str] = field(default_factory=list)  # files or glob patterns
    text_key: str = "text"  # field with the document text (jsonl, parquet)
    id_key: str = "id"  # field with the document id ('' or missing: file:line)
    url_key: str = "url"  # field with the page URL (URL dedup); missing = not URL-deduplicated
    date_key: str = ""  # field with an ISO date (URL dedup with priority 'newest')
    minhash: MinHashConfig = field(default_factory=MinHashConfig)  # near-dup parameters of this source

    def check(self):
        if self.reader not in READERS:
            raise ValueError(f"key 'reader': {self.reader!r} is not one of {', '.join(READERS)}")
        if not self.paths:
            raise ValueError(f"key 'paths': source '{self.name}' names no input files")


@dataclass
class DedupConfig:
    url: bool = True  # global URL dedup (normalised URLs, one document per URL)
    url_priority: str = "longest"  # which document of a URL is kept: longest | newest
    exact: bool = True  # exact-text dedup (whitespace-normalised text)
    minhash: bool = True  # MinHash LSH near-duplicate removal (parameters per source)
    seed: int = 1  # MinHash hash family
    backend: str = "rensa"  # signature backend: rensa | numpy

    def check(self):
        if self.url_priority not in URL_PRIORITIES:
            raise ValueError(f"key 'url_priority': {self.url_priority!r} is not one of {', '.join(URL_PRIORITIES)}")
        if self.backend not in ("rensa", "numpy"):
            raise ValueError(f"key 'backend': {self.backend!r} is not rensa or numpy")


@dataclass
class DecontamConfig:
    enabled: bool = True  # drop documents sharing an n-gram with an evaluation item
    ngram: int = 16  # n-gram length (words)
    min_exact_words: int = 6  # shorter items are matched whole when at least this many words
    benchmarks: str = "../shared/benchmarks"  # evaluation task files (absent folder: skipped, noted in the card)
    world: str = ""  # an embedded world folder whose held-out splits are evaluation items too

    def check(self):
        if self.ngram < 1 or not 1 <= self.min_exact_words <= self.ngram:
            raise ValueError("key 'ngram' must be >= 1 and 'min_exact_words' in [1, ngram]")


@dataclass
class BinConfig:
    name: str = "web"  # output shard folder name (a pre-training source)
    sources: list[str] = field(default_factory=list)  # input sources this bin takes ([] = all)
    domains: list[str] = field(default_factory=list)  # tagger domains accepted ([] = all)
    min_edu: float = 0.0  # minimum tagged educational value (0-5)
    max_junk: float = 1.0  # maximum tagged junk probability
    epochs: float = 4.0  # most times a stage schedule may repeat this bin's tokens


@dataclass
class StageMix:
    name: str = "stage1"
    tokens: int = 1_000_000  # tokens of this pre-training stage
    weights: dict[str, float] = field(default_factory=dict)  # bin -> weight (sums to 1)


@dataclass
class DataPipelineConfig:
    out_dir: str = "runs/data"  # data card, shards/<bin>, tokenizer/, mixture.yaml, work/ and logs/
    sources: list[SourceConfig] = field(default_factory=list)  # inputs
    executor: str = "local"  # datatrove executor: local | slurm | ray
    tasks: int = 2  # tasks of each sharded stage (input files are split among them)
    workers: int = 1  # local executor: tasks run at once
    buckets: int = 4  # hash shards of the global dedup stages
    batch_docs: int = 256  # documents per vectorised batch (signatures, decontamination, tags)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    tagger: str = ""  # tagger folder (openmimo tag-train); '' = no tags (bins must not filter on tags)
    bins: list[BinConfig] = field(default_factory=lambda: [BinConfig()])  # first bin that accepts a document takes it
    stages: list[StageMix] = field(default_factory=list)  # pre-training stages written to mixture.yaml
    tokenizer: str = ""  # tokenizer folder; '' = train a byte-level BPE on the kept text (tiny default)
    tokenizer_vocab: int = 2048  # vocabulary when training the tokenizer
    tokens_per_shard: int = 1 << 26  # tokens per shard file
    slurm_partition: str = ""  # slurm executor: partition
    slurm_time: str = "24:00:00"  # slurm executor: time limit per job

    def check(self):
        if not self.sources:
            raise ValueError("key 'sources' lists no input source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"key 'sources': names must be unique, got {names}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"key 'executor': {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.tasks < 1 or self.workers < 1 or self.buckets < 1 or self.batch_docs < 1:
            raise ValueError("keys 'tasks', 'workers', 'buckets', 'batch_docs' must be >= 1")
        bins = [b.name for b in self.bins]
        if not bins or len(set(bins)) != len(bins):
            raise ValueError(f"key 'bins': names must be unique and at least one, got {bins}")
        for b in self.bins:
            unknown = sorted(set(b.sources) - set(names))
            if unknown:
                raise ValueError(f"key 'bins': bin '{b.name}' names unknown source(s) {unknown}")
            if not self.tagger and (b.domains or b.min_edu > 0 or b.max_junk < 1):
                raise ValueError(f"key 'bins': bin '{b.name}' filters on tags but no 'tagger' is set")
        for s in self.stages:
            unknown = sorted(set(s.weights) - set(bins))
            if unknown:
                raise ValueError(f"key 'stages': stage '{s.name}' weights unknown bin(s) {unknown}")
            if abs(sum(s.weights.values()) - 1.0) > 1e-6 or any(w < 0 for w in s.weights.values()):
                raise ValueError(f"key 'stages': stage '{s.name}' weights must be >= 0 and sum to 1")
