"""Twelve famous Tang poems and a tiny model over them: what the evaluation and latent-statistics tests share."""

import torch

from textvae.vae import TextVAE, VAEConfig

POEMS = [
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
    "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
    "兩個黃鸝鳴翠柳，一行白鷺上青天。窗含西嶺千秋雪，門泊東吳萬里船。",
    "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
    "故人西辭黃鶴樓，煙花三月下揚州。孤帆遠影碧空盡，唯見長江天際流。",
    "月落烏啼霜滿天，江楓漁火對愁眠。姑蘇城外寒山寺，夜半鐘聲到客船。",
    "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。",
    "空山新雨後，天氣晚來秋。明月松間照，清泉石上流。竹喧歸浣女，蓮動下漁舟。隨意春芳歇，王孫自可留。",
    "葡萄美酒夜光杯，欲飲琵琶馬上催。醉臥沙場君莫笑，古來征戰幾人回。",
]
TINY = dict(embed_dim=32, encoder_hidden=32, decoder_hidden=64, latent_dim=8, max_len=80)


def tiny(tokenizer, posterior="gaussian", seed=0, **extra):
    torch.manual_seed(seed)
    config = VAEConfig.from_dict({"vocab_size": tokenizer.vocab_size, "posterior": posterior, **TINY, **extra})
    return TextVAE(config, tokenizer).eval()
