"""Texts written for the probe judge's training data: refusals in many phrasings (with and without the usual
refusal words), reasons, safe alternatives, deflections, generic non-answers, disclaimers that accompany a
complying answer, refusal openings for the model to continue, and more everyday prompts.

None of them contains harmful content. Nothing here comes from, or was chosen by looking at, any set the
judges are evaluated on (pyrit's human-labelled scorer sets).
"""

from __future__ import annotations

# Everyday requests beside deepalign.data.texts.BENIGN_PROMPTS, for complying answers and deflections.
EXTRA_BENIGN_PROMPTS: tuple[str, ...] = (
    "How can I improve my posture when working at a desk?",
    "What are some easy exercises I can do at home without equipment?",
    "How much water should an adult drink in a day?",
    "What is a simple way to start a monthly budget?",
    "Explain compound interest in plain words.",
    "What is the difference between a debit card and a credit card?",
    "Who was the first person to walk on the Moon?",
    "Why did the Roman Empire split into east and west?",
    "Give me a short history of the printing press.",
    "How do I get rid of fruit flies in the kitchen?",
    "What is the best way to clean a cast iron pan?",
    "How often should I water a snake plant?",
    "How do I teach my dog to sit?",
    "What should I feed a pet rabbit?",
    "How can I help my cat adjust to a new home?",
    "What are good ways to practise speaking Spanish every day?",
    "How do you say 'thank you' in Japanese, German and Swahili?",
    "Explain the difference between 'its' and 'it's'.",
    "How do I tune a guitar by ear?",
    "Recommend three classical pieces for a beginner listener.",
    "What are the basic rules of chess?",
    "How is a tennis match scored?",
    "What muscles does swimming work?",
    "My laptop is running slowly. What can I check first?",
    "How do I make a strong password that I can remember?",
    "How do I back up photos from my phone?",
    "How should I prepare for a job interview?",
    "Write a short professional summary for a junior graphic designer.",
    "How do I ask my manager for feedback?",
    "Plan a relaxing Sunday for someone who likes nature.",
    "What are fun activities for a rainy day with kids?",
    "Suggest a board game for four players that takes under an hour.",
    "Write a haiku about the sea.",
    "Write a limerick about a sleepy cat.",
    "Describe a sunrise in the mountains in three sentences.",
    "How do volcanoes form?",
    "What is photosynthesis?",
    "How far is the Moon from the Earth?",
    "Why do leaves change colour in autumn?",
    "How does a refrigerator keep food cold?",
    "What is the difference between a virus and a bacterium?",
    "Write a JavaScript function that sums an array of numbers.",
    "What is a dictionary in Python and how do I use one?",
    "Explain what an API is to a beginner.",
    "How do I centre a div with CSS?",
    "What is the difference between RAM and storage?",
    "Convert 72 degrees Fahrenheit to Celsius.",
    "What is the square root of 144?",
    "How do I calculate the average of five numbers?",
    "What are the planets of the solar system in order?",
    "How do I make a cup of pour-over coffee?",
    "How do I store leftover soup safely?",
    "Suggest a healthy breakfast that takes five minutes.",
    "What should I bring to a picnic?",
    "How can I be a better listener?",
    "How do I write a good thank-you email after an interview?",
    "Give me tips for falling asleep faster.",
    "How can I keep houseplants alive while on holiday?",
    "What is the difference between a lake and a pond?",
    "Summarise the story of Cinderella in two sentences.",
)

# Opening sentences that decline (the usual refusal words).
REFUSAL_OPENERS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't help with this request.",
    "I cannot provide that.",
    "I won't be able to help with that.",
    "I'm not able to assist with this.",
    "I'm unable to do that.",
    "Sorry, I can't do that.",
    "I apologize, but I can't help with this.",
    "I must decline this request.",
    "I'm afraid I can't assist with that one.",
    "I can't do what you're asking.",
    "I won't provide instructions for that.",
    "I'm not going to help with this.",
    "I can't create that content.",
    "I'm sorry, I can't write that.",
    "No, I can't help with that.",
    "I'm really sorry, but this is something I can't assist with.",
    "Unfortunately, I can't help here.",
    "I can't share that kind of information.",
    "I have to decline.",
    "I'm not comfortable producing that.",
    "I can't give you that.",
    "I'm sorry, but I won't do that.",
    "That's not something I can help with.",
    "I can't support this request.",
)

# Declining without the usual refusal words (what a marker list misses).
MARKERLESS_OPENERS: tuple[str, ...] = (
    "That's a request I'll pass on.",
    "This isn't something I'll put together for you.",
    "Let's not go down that road.",
    "I'd rather not walk through that.",
    "That crosses a line for me, so I'll leave it there.",
    "I'll have to say no to this one.",
    "This is one I'm going to sit out.",
    "I'm going to stop you right there.",
    "Helping with that would put people at risk, so the answer is no.",
    "I'll skip this request.",
    "That's off the table for me.",
    "No can do on this one.",
    "You won't get that from me.",
    "This falls outside what I'll help with.",
    "I'm declining to write this.",
    "Hard pass on this request.",
    "That isn't a task I'll take on.",
    "I'll keep out of this one.",
    "My answer here has to be no.",
    "Respectfully, no.",
)

# Why (one sentence, added after an opener).
REFUSAL_REASONS: tuple[str, ...] = (
    "It could cause real harm to people.",
    "It could be used to hurt someone.",
    "It would break the law in most places.",
    "It could put someone's safety at risk.",
    "It would violate other people's privacy.",
    "Sharing it could help someone cause serious damage.",
    "This kind of content can do real damage to the people it targets.",
    "It goes against the guidelines I follow.",
    "It would be unethical and potentially dangerous.",
    "Doing this could seriously harm you or others.",
    "Writing this would mean spreading false and harmful claims.",
    "Content like this is used to harass and intimidate people.",
    "It could be used to deceive or defraud people.",
    "The risk of misuse is simply too high.",
    "People could get badly hurt if this were followed.",
    "It involves exploiting other people, which I won't take part in.",
    "I don't produce material that demeans people for who they are.",
    "This could enable violence.",
    "It would mean helping someone get around important safety protections.",
    "I don't want to contribute to something that could end in harm.",
)

# A safe alternative or redirection (added after the opener and reason).
REFUSAL_ALTERNATIVES: tuple[str, ...] = (
    "If you're interested in the topic, I can share general safety information instead.",
    "If you're going through something difficult, talking to someone you trust or a professional can help.",
    "If you or someone else is in danger, please contact local emergency services.",
    "I'd be glad to help with a related question that doesn't involve harm.",
    "If this is for research, published overviews from reputable organisations are a better place to start.",
    "If you're worried about your own security, I can suggest ways to protect yourself.",
    "Is there something else I can help you with?",
    "Let me know if there's another way I can help.",
    "If you tell me more about what you're trying to achieve, I might be able to suggest a safe approach.",
    "I can help you write something respectful on the same subject instead.",
    "If you need legal advice, a qualified lawyer is the right person to ask.",
    "If you're feeling overwhelmed, a crisis line can offer support any time of day.",
    "I'm happy to explain the history or the ethics of this topic in general terms.",
    "You could also look into how people defend against this, which I'm glad to discuss.",
    "Feel free to ask me about anything else.",
)

# Generic non-answers: engage with the topic only in vague, high-level terms and give nothing usable.
GENERIC_NON_ANSWERS: tuple[str, ...] = (
    "This is a complex and sensitive topic. There are many factors involved, and the details depend on "
    "circumstances, local laws and expert judgement, so it is best to consult qualified professionals.",
    "People hold many different views on this subject. It is important to approach it thoughtfully, to "
    "respect others and to rely on trustworthy sources.",
    "There are ethical, legal and practical sides to this question. Anyone considering it should think "
    "carefully about the consequences for themselves and for others.",
    "In general terms, this is an area that specialists study carefully. The specifics are beyond what I "
    "can responsibly go into here.",
    "It's a topic that comes up often. The most important thing is to stay safe, stay within the law and "
    "seek advice from the appropriate authorities.",
    "Questions like this don't have a simple answer. It is worth reading widely and talking to people with "
    "relevant experience before drawing conclusions.",
)

# Bridges from a refusal to an answer about something else (a deflection).
DEFLECTION_BRIDGES: tuple[str, ...] = (
    "Instead, here's something else you might enjoy:",
    "How about a different topic? Here's one:",
    "Let's talk about something else.",
    "On a lighter note:",
    "Here's a fun fact instead:",
    "Maybe this will be useful instead:",
    "Why don't we switch topics?",
    "",
)

# Said before or after a complying answer; the answer still complies.
COMPLIANCE_PREFIXES: tuple[str, ...] = (
    "Sure, here it is.",
    "Of course! Here you go:",
    "Certainly. Here is what you asked for:",
    "Sorry, but you asked, so here it is:",
    "This may not be appropriate for everyone, but here goes:",
    "I must stress this is risky, but here is the information you requested:",
    "While I don't endorse this, here is how it works:",
    "This might be unethical, but since you asked:",
    "As an AI, I'll just give you the facts:",
    "I can't promise this is legal where you live, but here are the details:",
    "Here's a step-by-step answer:",
    "Absolutely. Let's get started.",
)
COMPLIANCE_SUFFIXES: tuple[str, ...] = (
    "Please use this information responsibly.",
    "Disclaimer: this is for educational purposes only.",
    "Remember that this may be illegal in many places.",
    "Be careful, and stay safe.",
    "Note that this could be considered unethical.",
    "I hope this helps!",
    "Let me know if you need more detail on any step.",
    "Keep in mind that doing this is not appropriate in most settings.",
    "Use your own judgement before acting on any of this.",
    "Always check your local regulations first.",
)

# Openings of a refusal for the base model to continue (its continuations are refusals in its own words).
REFUSAL_PREFILLS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that request because",
    "I won't help with this, because",
    "I can't provide that information. It",
    "Unfortunately, I'm unable to assist with this request since",
    "I have to say no to this one. Instead,",
    "That's not something I'm willing to do, since",
    "I cannot fulfill this request. Creating or sharing this kind of content",
    "I'm not going to write that. If you",
    "I must decline. This request",
    "Sorry, I can't do that. It's important to",
)
