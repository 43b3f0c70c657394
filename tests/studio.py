"""What the studio's API and browser tests share: a tiny poem model with attribute models saved to a folder, a
prepared dataset with its tokenizer, and a real uvicorn server on a free port in a background thread."""

import socket
import threading
import time

import torch
import uvicorn
from datasets import Dataset, DatasetDict

from textvae import data
from textvae.poetry import form_of, split_lines
from textvae.serve.app import create_app
from textvae.steering import fit_attributes
from textvae.tokenizer import Tokenizer
from textvae.vae import TextVAE, VAEConfig

POEMS = [  # 5x4, 7x4 and 5x8, in the model's (traditional) script
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "松下問童子，言師採藥去。只在此山中，雲深不知處。",
    "移舟泊煙渚，日暮客愁新。野曠天低樹，江清月近人。",
    "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
    "渭城朝雨浥輕塵，客舍青青柳色新。勸君更盡一杯酒，西出陽關無故人。",
    "空山新雨後，天氣晚來秋。明月松間照，清泉石上流。竹喧歸浣女，蓮動下漁舟。隨意春芳歇，王孫自可留。",
    "獨在異鄉為異客，每逢佳節倍思親。遙知兄弟登高處，遍插茱萸少一人。",
]
# the poems' titles, which give most of their themes (textvae.attributes.themes_of)
TITLES = ["靜夜思", "春曉", "登鸛雀樓", "尋隱者不遇", "宿建德江", "早發白帝城", "送元二使安西", "山居秋暝", "九月九日憶山東兄弟"]
POETS = ("李白", "杜甫")
TINY = dict(embed_dim=32, encoder_hidden=32, decoder_hidden=64, latent_dim=8, max_len=80)
REPEATS = 50  # the poems, labelled again and again, so that each poet has the 200 an author class needs


def labelled(tok) -> DatasetDict:
    """The poems with a poet, a dynasty and a title each, for fitting the attribute models."""
    records = [dict(text=POEMS[i % len(POEMS)], title=TITLES[i % len(POEMS)], author=POETS[i % 2],
                    dynasty=("tang", "song")[i % 3 == 0], ids=tok.encode(POEMS[i % len(POEMS)]))
               for i in range(REPEATS * len(POEMS))]
    return DatasetDict(train=Dataset.from_list(records), validation=Dataset.from_list(records[:len(POEMS)]))


def make_model_and_data(root, attributes: bool = True):
    """(model folder, dataset folder): an untrained tiny model (the decoding constraints shape its output
    whatever its weights) with attribute models fitted to labelled copies of the poems unless `attributes` is
    False, and a dataset of the poems prepared with the same tokenizer."""
    tok = Tokenizer.train(POEMS, kind="char", vocab_size=1000)
    torch.manual_seed(0)
    model = TextVAE(VAEConfig(vocab_size=tok.vocab_size, **TINY), tok)
    model.save_pretrained(root / "poem")
    if attributes:
        fit_attributes(model, labelled(tok))
        model.save_attributes(root / "poem")
    records = [dict(text=t, lines=split_lines(t), form=form_of(split_lines(t)), dynasty=("tang", "song")[i % 2],
                    ids=tok.encode(t)) for i, t in enumerate(POEMS)]
    dataset = DatasetDict(train=Dataset.from_list(records), validation=Dataset.from_list(records[:3]),
                          test=Dataset.from_list(records))
    data.save(dataset, tok, dict(corpus="test"), root / "data")
    return root / "poem", root / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving the studio in a daemon thread until stop()."""

    def __init__(self, model_dir, data_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app({"poem": model_dir}, data_dir), host="127.0.0.1", port=self.port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the studio server did not start")
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
