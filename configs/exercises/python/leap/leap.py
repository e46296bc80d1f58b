def leap_year(year):
    raise NotImplementedError("implement leap_year")
