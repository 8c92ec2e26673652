"""Built-in vocabulary of the OCR renderer: English and Chinese words, shop names, receipt items.

Real words (no lorem ipsum), so a recogniser trained on the renders learns the letter statistics of
the language, and the read-back check of the tests can tell a misread from a plausible word. Every
string here is drawable by the default fonts of its script (DejaVu for English, WenQuanYi Zen Hei for
Chinese); the renderer checks coverage for word lists given in files as well.
"""

from __future__ import annotations

EN_WORDS: tuple[str, ...] = (
    "about", "above", "account", "across", "action", "active", "actual", "address", "advice", "after",
    "again", "against", "agency", "agree", "air", "almost", "along", "already", "also", "always",
    "amount", "analysis", "annual", "answer", "apply", "approach", "area", "around", "article", "ask",
    "available", "average", "away", "back", "balance", "bank", "base", "basic", "because", "become",
    "before", "begin", "behind", "believe", "below", "benefit", "better", "between", "beyond", "bill",
    "black", "board", "body", "book", "both", "branch", "bread", "bridge", "bring", "budget",
    "build", "business", "buyer", "call", "camera", "capital", "card", "care", "carry", "case",
    "cash", "center", "central", "certain", "chair", "chance", "change", "chapter", "charge", "check",
    "child", "choice", "choose", "church", "city", "claim", "class", "clear", "client", "close",
    "coast", "coffee", "cold", "college", "color", "common", "company", "compare", "complete", "contact",
    "contract", "control", "corner", "cost", "could", "council", "country", "county", "course", "court",
    "cover", "create", "credit", "cross", "culture", "current", "customer", "daily", "data", "date",
    "debt", "decide", "deep", "degree", "delivery", "demand", "design", "detail", "develop", "device",
    "direct", "discount", "district", "doctor", "document", "dollar", "door", "down", "draft", "draw",
    "drive", "early", "east", "easy", "economy", "edge", "editor", "effect", "effort", "energy",
    "engine", "enough", "entire", "entry", "equal", "estate", "evening", "event", "every", "evidence",
    "exact", "example", "exchange", "expect", "expense", "export", "face", "factor", "family", "farm",
    "fast", "feature", "federal", "field", "figure", "file", "final", "finance", "find", "fine",
    "finish", "fire", "first", "floor", "focus", "follow", "food", "force", "forest", "form",
    "forward", "free", "fresh", "friend", "front", "fruit", "full", "fund", "future", "game",
    "garden", "general", "glass", "global", "goal", "good", "green", "ground", "group", "growth",
    "guide", "half", "hand", "harbor", "health", "heart", "heavy", "help", "high", "history",
    "home", "hospital", "hotel", "hour", "house", "however", "human", "idea", "image", "import",
    "income", "increase", "index", "industry", "inside", "interest", "invoice", "island", "issue", "item",
    "journal", "journey", "judge", "just", "keep", "kitchen", "known", "labor", "land", "language",
    "large", "later", "leader", "learn", "leave", "legal", "letter", "level", "library", "light",
    "limit", "line", "list", "little", "local", "long", "machine", "main", "major", "manager",
    "market", "master", "material", "matter", "meeting", "member", "method", "middle", "minute", "model",
    "modern", "moment", "money", "month", "morning", "mountain", "music", "national", "natural", "nature",
    "network", "never", "night", "north", "notice", "number", "object", "office", "often", "open",
    "option", "order", "other", "outside", "owner", "page", "paper", "parent", "park", "part",
    "party", "payment", "people", "period", "person", "phone", "picture", "piece", "place", "plan",
    "plant", "player", "point", "police", "policy", "popular", "position", "power", "present", "press",
    "price", "private", "problem", "process", "product", "program", "project", "public", "quality", "quarter",
    "question", "quick", "quiet", "rate", "reach", "ready", "reason", "receipt", "record", "region",
    "report", "research", "result", "return", "review", "river", "road", "room", "round", "rule",
    "safety", "sale", "sample", "school", "science", "season", "second", "section", "security", "service",
    "share", "short", "signal", "simple", "single", "small", "social", "south", "space", "special",
    "staff", "stage", "standard", "station", "status", "stock", "store", "story", "street", "strong",
    "student", "study", "summer", "supply", "support", "surface", "system", "table", "target", "task",
    "teacher", "term", "test", "theory", "through", "ticket", "time", "today", "total", "tower",
    "trade", "train", "travel", "treatment", "trust", "under", "union", "unit", "until", "upper",
    "valley", "value", "village", "visit", "voice", "wall", "water", "weather", "week", "weight",
    "west", "while", "white", "whole", "window", "winter", "within", "without", "woman", "wood",
    "word", "work", "world", "write", "year", "yellow", "young", "zone",
)  # fmt: skip

ZH_WORDS: tuple[str, ...] = (
    "我们", "他们", "今天", "明天", "昨天", "时间", "工作", "学习", "学生", "老师",
    "学校", "公司", "经济", "发展", "社会", "国家", "政府", "城市", "农村", "地方",
    "问题", "方法", "技术", "科学", "研究", "数据", "系统", "管理", "服务", "市场",
    "价格", "产品", "质量", "生产", "销售", "客户", "合同", "项目", "计划", "目标",
    "结果", "影响", "变化", "环境", "资源", "能源", "交通", "道路", "铁路", "机场",
    "医院", "医生", "健康", "教育", "文化", "历史", "艺术", "音乐", "电影", "新闻",
    "报告", "文件", "会议", "讨论", "决定", "选择", "需要", "可能", "重要", "主要",
    "基本", "一般", "特别", "非常", "已经", "正在", "开始", "结束", "继续", "完成",
    "提高", "增加", "减少", "保持", "改善", "支持", "参加", "组织", "活动", "比赛",
    "朋友", "家庭", "孩子", "父母", "生活", "房子", "厨房", "饭店", "超市", "银行",
    "电话", "手机", "电脑", "网络", "信息", "软件", "设备", "机器", "工厂", "工人",
    "农民", "土地", "天气", "春天", "夏天", "秋天", "冬天", "早上", "晚上", "中午",
    "北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "天津",
    "中国", "世界", "国际", "地区", "人口", "面积", "山区", "河流", "湖泊", "海洋",
    "森林", "草原", "公园", "花园", "广场", "街道", "商店", "书店", "图书馆", "博物馆",
    "体育", "运动", "足球", "篮球", "游泳", "跑步", "旅游", "旅行", "酒店", "车站",
    "火车", "汽车", "飞机", "地铁", "公交", "出租", "自行车", "门票", "价值", "成本",
    "利润", "收入", "支出", "投资", "贷款", "存款", "账户", "现金", "发票", "收据",
    "税率", "折扣", "优惠", "会员", "积分", "订单", "付款", "退款", "送货", "包装",
    "安全", "注意", "禁止", "欢迎", "谢谢", "出口", "入口", "营业", "时间表", "通知",
    "说明", "介绍", "内容", "部分", "方面", "情况", "条件", "标准", "原因", "意见",
    "建议", "要求", "规定", "办法", "措施", "政策", "法律", "制度", "权利", "责任",
    "关系", "合作", "交流", "沟通", "理解", "帮助", "解决", "处理", "检查", "测试",
    "设计", "建设", "制造", "运输", "储存", "分析", "统计", "调查", "评估", "预测",
    "美丽", "干净", "安静", "热闹", "方便", "舒服", "简单", "复杂", "容易", "困难",
    "快乐", "幸福", "努力", "认真", "仔细", "清楚", "明白", "相信", "希望", "喜欢",
    "水果", "苹果", "香蕉", "西瓜", "面包", "牛奶", "咖啡", "茶叶", "米饭", "面条",
    "鸡蛋", "蔬菜", "豆腐", "牛肉", "猪肉", "鱼片", "饮料", "果汁", "啤酒", "矿泉水",
    "早餐", "午餐", "晚餐", "菜单", "服务员", "厨师", "餐厅", "外卖", "快递", "邮局",
)  # fmt: skip

EN_SHOPS: tuple[str, ...] = (
    "Green Market", "Corner Coffee", "City Bakery", "Harbor Books", "Fresh Foods", "Sunrise Deli",
    "North Hardware", "Blue River Cafe", "Main Street Pharmacy", "Golden Noodle House", "Village Grocer",
    "Oak Tree Diner", "Metro Electronics", "Riverside Florist", "Lakeside Pizza", "Union Station Kiosk",
)  # fmt: skip

ZH_SHOPS: tuple[str, ...] = (
    "好又多超市", "老街面馆", "阳光便利店", "新华书店", "绿色水果店", "东方咖啡馆", "家乐福超市",
    "小城饺子馆", "平安大药房", "明月茶楼", "幸福烘焙坊", "华联商场",
)  # fmt: skip

EN_ITEMS: tuple[str, ...] = (
    "Coffee", "Latte", "Green Tea", "Orange Juice", "Croissant", "Bagel", "Bread", "Milk 1L", "Eggs 12",
    "Butter", "Cheese", "Apples", "Bananas", "Tomatoes", "Potatoes", "Onions", "Rice 2kg", "Pasta",
    "Olive Oil", "Chicken", "Salmon", "Yogurt", "Cookies", "Chocolate", "Water 6pk", "Soap", "Batteries",
    "Notebook", "Pen Set", "Light Bulb", "Sandwich", "Soup", "Salad", "Muffin", "Donut", "Ice Cream",
)  # fmt: skip

ZH_ITEMS: tuple[str, ...] = (
    "咖啡", "绿茶", "牛奶", "面包", "鸡蛋", "苹果", "香蕉", "西红柿", "土豆", "大米", "面条", "酱油",
    "食用油", "鸡肉", "牛肉", "酸奶", "饼干", "巧克力", "矿泉水", "洗衣粉", "纸巾", "电池", "笔记本",
    "饺子", "包子", "豆浆", "油条", "米粉", "可乐", "橙汁",
)  # fmt: skip

EN_RECEIPT: dict[str, str] = {
    "subtotal": "SUBTOTAL", "tax": "TAX", "total": "TOTAL", "cash": "CASH", "card": "CARD",
    "change": "CHANGE", "thanks": "THANK YOU", "receipt": "Receipt No.", "tel": "Tel", "cashier": "Cashier",
}  # fmt: skip
ZH_RECEIPT: dict[str, str] = {
    "subtotal": "小计", "tax": "税额", "total": "合计", "cash": "现金", "card": "刷卡",
    "change": "找零", "thanks": "谢谢惠顾", "receipt": "单号", "tel": "电话", "cashier": "收银员",
}  # fmt: skip

EN_STREETS: tuple[str, ...] = (
    "Main Street", "Oak Avenue", "Park Road", "River Lane", "Market Square", "Station Road", "Hill Street",
    "King Street", "Church Lane", "Mill Road",
)  # fmt: skip
ZH_STREETS: tuple[str, ...] = (
    "人民路", "中山路", "解放路", "建设路", "和平街", "长江路", "文化路", "新华街", "光明路", "胜利街",
)  # fmt: skip

EN_SIGNS: tuple[str, ...] = (
    "EXIT", "OPEN", "CLOSED", "SALE", "PARKING", "NO ENTRY", "STOP", "HOTEL", "PHARMACY", "BAKERY",
    "CAFE", "TAXI", "BUS STOP", "WELCOME", "PUSH", "PULL", "RESTROOM", "TICKETS", "ENTRANCE", "POLICE",
)  # fmt: skip
ZH_SIGNS: tuple[str, ...] = (
    "出口", "入口", "停车场", "营业中", "欢迎光临", "禁止吸烟", "小心地滑", "安全出口", "售票处", "公交车站",
    "洗手间", "药店", "面包店", "咖啡厅", "请勿停车", "限速", "前方施工", "地铁站",
)  # fmt: skip

ZH_COMMA, ZH_STOP = "\uff0c", "\u3002"
ZH_PUNCTUATION = "，。；：、"  # noqa: RUF001 (Chinese full-width punctuation, as meant)
"""Full-width comma, full stop, semicolon, colon and enumeration comma."""
