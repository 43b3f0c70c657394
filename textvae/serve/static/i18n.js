// The studio's words in 繁體中文, 简体中文 and English: one entry a key, the key being the English where short.
// Labels in the page carry data-i18n (text), data-i18n-placeholder or data-i18n-title; studio.js calls t().
"use strict";

const WORDS = {
  "studio": ["詩歌工作室", "诗歌工作室", "poem studio"],
  "model": ["模型", "模型", "model"],
  "output script": ["輸出字體", "输出字体", "output script"],
  "the model's own": ["模型原字", "模型原字", "the model's own"],
  "language": ["介面語言", "界面语言", "language"],
  "Write": ["作詩", "作诗", "Write"],
  "Reconstruct / Vary": ["重構・變化", "重构・变化", "Reconstruct / Vary"],
  "Restyle": ["風格改寫", "风格改写", "Restyle"],
  "Interpolate": ["插值", "插值", "Interpolate"],
  "Latent map": ["隱空間圖", "隐空间图", "Latent map"],
  "Model card": ["模型卡", "模型卡", "Model card"],
  "form": ["體裁", "体裁", "form"],
  "automatic": ["自動", "自动", "automatic"],
  "5x4": ["五言絕句", "五言绝句", "5x4"],
  "7x4": ["七言絕句", "七言绝句", "7x4"],
  "5x8": ["五言律詩", "五言律诗", "5x8"],
  "7x8": ["七言律詩", "七言律诗", "7x8"],
  "drawn from the corpus": ["依語料比例抽取", "依语料比例抽取", "drawn from the corpus"],
  "free (no shape)": ["自由（無定式）", "自由（无定式）", "free (no shape)"],
  "rhyme": ["押韻（平水韻）", "押韵（平水韵）", "rhyme (平水韻)"],
  "meter": ["格律（平仄）", "格律（平仄）", "meter (格律)"],
  "acrostic": ["藏頭", "藏头", "acrostic"],
  "keywords": ["關鍵字", "关键词", "keywords"],
  "keywords help": ["一至四個詞（每詞一至三字），每首詩都在某一句中寫出", "一至四个词（每词一至三字），每首诗都在某一句中写出",
                    "1 to 4 words of 1 to 3 characters, each written within one line of every poem"],
  "Style": ["風格", "风格", "Style"],
  "like": ["仿詩人", "仿诗人", "like poet"],
  "era": ["時代", "时代", "era"],
  "theme": ["題材", "题材", "theme"],
  "any": ["不限", "不限", "any"],
  "strength": ["強度", "强度", "strength"],
  "strength help": ["詩人、時代與題材的拉力 s（p(z) p(y|z)^s），0 到 100；越大越像", "诗人、时代与题材的拉力 s（p(z) p(y|z)^s），0 到 100；越大越像",
                    "how hard the poet, era and theme pull: s in p(z) p(y|z)^s, up to 100; larger follows them closer"],
  "restyle strength help": ["詩的 z 向所選風格移動多遠：越大越像，保留的原字越少", "诗的 z 向所选风格移动多远：越大越像，保留的原字越少",
                            "how far the poem's z moves toward the style: larger keeps fewer of its characters"],
  "restyled": ["改寫", "改写", "restyled"],
  "kept": ["原位保留：", "原位保留：", "kept in place: "],
  "restyle needs attributes": ["這個模型沒有屬性模型，無法改寫風格：先執行 textvae fit-attributes MODEL",
                               "这个模型没有属性模型，无法改写风格：先运行 textvae fit-attributes MODEL",
                               "this model has no attribute models to restyle by: run `textvae fit-attributes MODEL`"],
  "farewell": ["送別", "送别", "farewell"],
  "autumn": ["秋", "秋", "autumn"],
  "spring": ["春", "春", "spring"],
  "moon": ["月", "月", "moon"],
  "frontier": ["邊塞", "边塞", "frontier"],
  "history": ["懷古", "怀古", "history"],
  "landscape": ["山水", "山水", "landscape"],
  "temple": ["寺/僧", "寺/僧", "temples and monks"],
  "wine": ["酒", "酒", "wine"],
  "plum": ["梅", "梅", "plum blossom"],
  "temperature": ["溫度", "温度", "temperature"],
  "top-p": ["核採樣 top-p", "核采样 top-p", "top-p"],
  "count": ["首數", "首数", "count"],
  "seed": ["種子", "种子", "seed"],
  "random": ["隨機", "随机", "random"],
  "poem (traditional or simplified)": ["詩（繁體或简体皆可）", "诗（繁体或简体皆可）", "poem (traditional or simplified)"],
  "variations": ["變化", "变化", "variations"],
  "spread": ["離散度", "离散度", "spread"],
  "spread help": ["每個變化的 z 離原詩的 z 多遠：1 取自 q(z|x)；越小越保留原詩",
                  "每个变化的 z 离原诗的 z 多远：1 取自 q(z|x)；越小越保留原诗",
                  "how far each variation's z strays from the poem's: 1 draws from q(z|x); smaller keeps more of the poem"],
  "Reconstruct": ["重構", "重构", "Reconstruct"],
  "input": ["原詩", "原诗", "input"],
  "reconstruction": ["重構", "重构", "reconstruction"],
  "A": ["起點 A", "起点 A", "A"],
  "B": ["終點 B", "终点 B", "B"],
  "steps": ["步數", "步数", "steps"],
  "colour by": ["著色依據", "着色依据", "colour by"],
  "dynasty": ["朝代", "朝代", "dynasty"],
  "tang": ["唐", "唐", "Tang"],
  "song": ["宋", "宋", "Song"],
  "other": ["其他", "其他", "other"],
  "place help": ["放置詩（每行一首；最近寫的詩也會放上）", "放置诗（每行一首；最近写的诗也会放上）",
                 "place poems (one a line; the last written ones are placed too)"],
  "Place": ["放置", "放置", "Place"],
  "KL per dimension": ["每維 KL（奈特）", "每维 KL（奈特）", "KL per latent dimension (nats)"],
  "variance per dimension": ["每維後驗均值的方差", "每维后验均值的方差", "variance of the posterior means per dimension"],
  "copy": ["複製", "复制", "copy"],
  "encoding": ["正在編碼測試集…", "正在编码测试集…", "encoding the test split…"],
  "map summary": ["{n} 首測試詩的後驗均值，投影到前兩個主軸（解釋 {a} % 與 {b} % 的方差）；滑鼠移到點上可讀詩；★ 為放置的詩",
                  "{n} 首测试诗的后验均值，投影到前两个主轴（解释 {a} % 与 {b} % 的方差）；鼠标移到点上可读诗；★ 为放置的诗",
                  "{n} test poems, posterior means projected on their first two principal axes ({a} % and {b} % of the " +
                  "variance); hover a point to read it; ★ are the placed poems"],
  "map needs data": ["隱空間圖需要已準備的語料：先執行 textvae prepare poems，再重新啟動 textvae serve（或以 --data 指定語料）",
                     "隐空间图需要已准备的语料：先运行 textvae prepare poems，再重新启动 textvae serve（或以 --data 指定语料）",
                     "the latent map needs a prepared corpus: run `textvae prepare poems`, then restart `textvae serve` " +
                     "(or give one with --data)"],
  "posterior": ["後驗", "后验", "posterior"],
  "decoder": ["解碼器", "解码器", "decoder"],
  "parameters": ["參數", "参数", "parameters"],
  "learned priors": ["學得的先驗", "学得的先验", "learned priors"],
  "prior": ["先驗", "先验", "prior"],
  "auto prior": ["自動（{kind}）", "自动（{kind}）", "auto ({kind})"],
  "standard": ["標準正態 N(0, I)", "标准正态 N(0, I)", "standard N(0, I)"],
  "gmm": ["高斯混合", "高斯混合", "Gaussian mixture"],
  "flow": ["標準化流", "标准化流", "normalizing flow"],
  "diffusion": ["潛空間擴散", "潜空间扩散", "latent diffusion"],
  "(default)": ["（預設）", "（默认）", " (default)"],
  "path": ["路徑", "路径", "path"],
  "path crossings": ["逐句交叉", "逐句交叉", "through crossings"],
  "path linear": ["直線", "直线", "straight line"],
  "path slerp": ["球面插值", "球面插值", "spherical (slerp)"],
  "path prior": ["沿先驗座標", "沿先验坐标", "the prior's coordinates"],
  "none": ["無", "无", "none"],
  "yes": ["有", "有", "yes"],
  "no": ["無", "无", "no"],
  "nats per text": ["奈特／首", "奈特／首", "nats per text"],
  "nats": ["奈特", "奈特", "nats"],
  "active units": ["活躍維度", "活跃维度", "active units"],
  "scored on": ["評測", "评测", "scored on"],
  "test texts": ["{n} 首測試詩（eval.json）", "{n} 首测试诗（eval.json）", "{n} test texts (eval.json)"],
  "no eval.json": ["無 eval.json", "无 eval.json", "no eval.json"],
  "dimensions": ["最大 {max}，{n} 維", "最大 {max}，{n} 维", "max {max}, {n} dimensions"],
};
const LANGUAGES = ["zh-Hant", "zh-Hans", "en"];
let language = LANGUAGES.includes(localStorage.getItem("textvae-language")) ? localStorage.getItem("textvae-language")
  : "zh-Hant";

// the word for `key` in the page's language, with {name} filled from `values`
function t(key, values = {}) {
  const words = WORDS[key];
  const text = words ? words[LANGUAGES.indexOf(language)] : key;
  return text.replace(/\{(\w+)\}/g, (_, name) => values[name]);
}

function applyLanguage(chosen) {
  language = chosen;
  localStorage.setItem("textvae-language", chosen);
  document.documentElement.lang = chosen;
  document.title = `textvae · ${t("studio")}`;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}
