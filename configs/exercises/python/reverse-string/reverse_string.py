def reverse(text):
    raise NotImplementedError("implement reverse")
